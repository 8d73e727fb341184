# make dist: the source tarball deploy/bootstrap.sh installs from
# ($(BUILD)/sensornet-VERSION.tar.gz, and $(BUILD)/sensornet.tar.gz linking
# to it). The Makefile includes this file after its rules; it also works
# alone: make -f deploy/dist.mk dist [BUILD=dir].
# SPDX-License-Identifier: MIT

BUILD ?= build

.PHONY: dist
dist:
	@bash deploy/dist.sh $(BUILD)
