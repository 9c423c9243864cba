"""A generic folder of NIfTI images with optional lesion and brain masks."""
