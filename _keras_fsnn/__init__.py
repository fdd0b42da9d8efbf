"""The parts of keras-fsnn that run without Keras: the command line (`keras-fsnn`) and the
zoo's catalogue of preset files.

They live outside `keras_fsnn` because importing that package imports Keras and its backend
(seconds): it must, to register its layers for `keras.saving.load_model`. The public names
are `keras_fsnn.cli.main` and `keras_fsnn.zoo.*`.
"""
