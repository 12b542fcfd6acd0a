"""TR-069 / CWMP: codec, ACS, helper."""
