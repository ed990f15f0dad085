"""Traceability profiles: what a regulation (FSMA 204, 一品一码 food records, medical device UDI) asks of
EPCIS events, as data (`data/*.yaml`), with the checks (`rules`) and reports (`reports`) built on it.

Profiles add validation and reports; events stay plain EPCIS.
"""
