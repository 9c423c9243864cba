"""ATLAS v2.0 stroke lesions as distributed."""
