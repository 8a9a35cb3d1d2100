# The notebooks run top to bottom when imported: keep pytest's --doctest-modules from importing them.
collect_ignore_glob = ["[!_]*.py"]
