"""Zoo presets, one folder each (config.json, model.weights.h5, metadata.json, README.md).
Installed as the package `keras_fsnn.presets`; see `keras_fsnn.zoo`."""
