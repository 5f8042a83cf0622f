"""Build-time helpers of build_fmu.py (never shipped inside an FMU)."""
