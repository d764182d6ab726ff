"""The official `stripe` Python package's resource classes by the object
name Stripe gives them (`OBJECT_NAME`), for the oracle scripts beside this
one. Version 2 of the API (`stripe.v2`) is left out: its names are not
those of the objects the engine mirrors.
"""

import importlib
import pkgutil

import stripe


def classes_by_object_name():
    found = {}
    for module in pkgutil.walk_packages(stripe.__path__, "stripe."):
        if ".api_resources" in module.name or ".v2" in module.name:
            continue
        try:
            loaded = importlib.import_module(module.name)
        except Exception:  # a module needing an optional dependency
            continue
        for value in vars(loaded).values():
            name = getattr(value, "OBJECT_NAME", None)
            if isinstance(value, type) and isinstance(name, str):
                found.setdefault(name, value)
    return found
