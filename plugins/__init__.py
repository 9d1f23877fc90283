"""Acquisition-software plugins (Qt overlay, ACQ4 module, MIES bridge). Qt code lives only here."""
