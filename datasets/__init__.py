"""Built-in dataset plugins (installed as ``adbench.datasets``)."""
