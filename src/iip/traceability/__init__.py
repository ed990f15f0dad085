"""Traceability: a GS1 EPCIS 2.0 repository (capture, query, genealogy); only the EPCIS codec exists so far."""
