set terminal pngcairo size 1000,600 noenhanced
set output 'throughput.png'
set title 'Ingest on loopback, 2 cores shared by server and load generator'
set xlabel 'connections'
set ylabel 'readings/s acknowledged'
set logscale x
set logscale y
set grid
set key outside right
set format y '%.0s%c'
plot 'throughput-0.dat' using 1:2:3:4 with yerrorlines lw 2 title 'discard-ack', \
     'throughput-1.dat' using 1:2:3:4 with yerrorlines lw 2 title 'discard-drop', \
     'throughput-2.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-nostore', \
     'throughput-3.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-sqlite-logon', \
     'throughput-4.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-sqlite-logoff', \
     'throughput-5.dat' using 1:2:3:4 with yerrorlines lw 2 title 'influxdb-1.6.7~rc0', \
     'throughput-6.dat' using 1:2:3:4 with yerrorlines lw 2 title 'mosquitto-qos1', \
     'throughput-7.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-mqtt-qos1', \
     'throughput-8.dat' using 1:2:3:4 with yerrorlines lw 2 title 'sensornet-pg-logon'
