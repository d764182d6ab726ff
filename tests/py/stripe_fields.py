"""Which fields the official `stripe` Python package's classes declare, for
the test that holds the registry's typed columns to Stripe's current API
version (tests/it/api_fields.rs).

Reads a JSON object {object name: [field, ...]} on stdin and prints a JSON
object {"version": the package's API version, "missing": {object: [fields
its class does not declare]}, "classless": [objects with no class]}.
"""

import json
import sys

import stripe
from stripe_classes import classes_by_object_name


def declared(cls):
    fields = set()
    for klass in cls.__mro__:
        fields.update(getattr(klass, "__annotations__", {}))
    return fields


def main():
    wanted = json.load(sys.stdin)
    classes = classes_by_object_name()
    missing, classless = {}, []
    for name, fields in wanted.items():
        cls = classes.get(name)
        if cls is None:
            classless.append(name)
            continue
        absent = sorted(f for f in fields if f not in declared(cls))
        if absent:
            missing[name] = absent
    json.dump(
        {"version": stripe.api_version, "missing": missing, "classless": sorted(classless)},
        sys.stdout,
    )


main()
