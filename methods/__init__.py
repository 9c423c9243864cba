"""Built-in detector plugins (installed as ``adbench.methods``)."""
