"""Bad input refused in one line before anything loads: the command line before Hydra starts
(``command_line``), a composed config against its schemas (``schemas``) and every model-free
check of a cell (``checks``)."""
