"""The one preprocessing layer: what turns an image or a volume into a network input, and a prediction back into
the input's space. Training, the app, `lorkd apply` and the scripts copied into every exported bundle all call
these functions, so an expert gives the same answer everywhere.

Bundle-portable: modules here import only the standard library, numpy, torch, MONAI and the project's `io` (the
layer below, for its orientation rule), each other through relative imports; export copies the package into each
bundle's `scripts/`.
"""
