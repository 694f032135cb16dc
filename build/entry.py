"""PyInstaller's script for the multi-call binary (cni_plugins/__main__.py uses relative
imports, so it cannot be the script itself)."""

from cni_plugins.__main__ import main

main()
