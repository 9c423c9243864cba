"""GANomaly (Akçay, Atapour-Abarghouei and Breckon, ACCV 2018) at 160x128."""
