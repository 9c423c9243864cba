"""Embedded synthetic-lesion dataset built from the MNI152 2009a template nilearn ships."""
