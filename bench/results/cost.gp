set terminal pngcairo size 1000,600 noenhanced
set output 'cost.png'
set title 'Ingest on loopback, 2 cores shared by server and load generator'
set xlabel 'connections'
set ylabel 'server CPU per reading (us)'
set logscale x
set logscale y
set grid
set key outside right
plot 'cost-0.dat' using 1:2:3:4 with yerrorlines lw 2 title 'discard-ack', \
     'cost-1.dat' using 1:2:3:4 with yerrorlines lw 2 title 'discard-drop', \
     'cost-2.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-nostore', \
     'cost-3.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-sqlite-logon', \
     'cost-4.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-sqlite-logoff', \
     'cost-5.dat' using 1:2:3:4 with yerrorlines lw 2 title 'influxdb-1.6.7~rc0', \
     'cost-6.dat' using 1:2:3:4 with yerrorlines lw 2 title 'mosquitto-qos1', \
     'cost-7.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-mqtt-qos1', \
     'cost-8.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-pg-logon'
