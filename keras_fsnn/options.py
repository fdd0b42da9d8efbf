"""Option objects (neurons, backward modes): one registry mechanism and one resolution rule,
the way `keras.initializers.get` resolves an initializer.

An option is given as a registered name, with the layer's short-form arguments that build
it (`neuron="lif", leak=0.9`), as an instance, or as its `keras.saving` config; short forms
beside an instance or a config are an error, since they would be ignored. A class of one's
own joins a registry through its decorator and becomes serialisable with it, so `.keras`
files holding it load.
"""

import keras

from keras_fsnn import validation


def registrar(registry, base, kind, name, package):
    """A class decorator that registers a subclass of `base` as `name` in `registry`."""
    name = str(name).lower()

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"Registering the {kind} {name!r} needs a subclass of {base.__module__}.{base.__name__}; "
                            f"received {cls!r}.")
        if name in registry and registry[name] is not cls:
            raise ValueError(f"A {kind} named {name!r} is registered already ({registry[name].__name__}).")
        cls.name = name
        registry[name] = keras.saving.register_keras_serializable(package=package)(cls)
        return cls

    return register


def resolve(argument, identifier, registry, base, kind, short, build):
    """The option `identifier` stands for: `build(cls, given)` for a registered name (given:
    the short forms that are not None), the instance itself, or the deserialised config."""
    given = {key: value for key, value in short.items() if value is not None}
    if isinstance(identifier, str):
        return build(validation.choose(argument, identifier, registry), given)
    if isinstance(identifier, dict):
        identifier = keras.saving.deserialize_keras_object(identifier)
    if not isinstance(identifier, base):
        raise TypeError(f"Argument `{argument}` must be a {kind} name ({', '.join(map(repr, registry))}), a "
                        f"{base.__module__}.{base.__name__} or its config; received {argument}={identifier!r}.")
    if given:
        key, value = next(iter(given.items()))
        raise ValueError(f"Argument `{key}`={value!r} builds a named {kind}; the {kind} {identifier!r} is given as an "
                         "object: set it there.")
    return identifier
