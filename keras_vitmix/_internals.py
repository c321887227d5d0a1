"""The one module of keras_vitmix that touches private Keras or TensorFlow API.

Everything here exists because a fast route or a convenience needs a symbol that Keras
or TensorFlow do not make public. Each function has a fallback to the public path that
gives the same numbers, taken when the symbol is missing (an older or newer Keras) or
when `keras_vitmix.config.fast_routes_enabled()` is false; tests/test_internals.py
simulates the absence of each symbol and checks the fallback. No other module of the
package names a `keras.src` import or an underscored attribute of a Keras object.
"""
