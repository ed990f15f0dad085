"""Pure codecs of the ICS protocols the monitor reads: Modbus/TCP, DNP3, IEC 60870-5-104, S7comm."""
