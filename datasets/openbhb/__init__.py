"""OpenBHB healthy scans (quasi-raw release) as distributed."""
