"""Which object types' list calls take a `created` filter, as the official
`stripe` Python package declares their list parameters, for the test that
holds `registry::LISTED_BY_CREATED` to it (tests/it/api_fields.rs).

Reads object names, whitespace-separated, on stdin; prints a JSON object
{object: true | false | null}, null for a type the package has no list of.
"""

import importlib
import inspect
import json
import re
import sys

from stripe_classes import classes_by_object_name


def list_params(cls):
    """The class of `cls.list`'s parameters, imported where its module does."""
    annotation = str(inspect.signature(cls.list).parameters["params"].annotation)
    name = re.search(r"ForwardRef\('(\w+)'\)", annotation).group(1)
    source = inspect.getsource(sys.modules[cls.__module__])
    where = re.search(r"from (stripe\.params[\w.]*) import \(?\s*" + name + r"\b", source)
    return getattr(importlib.import_module(where.group(1)), name)


classes = classes_by_object_name()
answer = {}
for obj in sys.stdin.read().split():
    cls = classes.get(obj)
    if cls is None or not hasattr(cls, "list"):
        answer[obj] = None
    else:
        answer[obj] = "created" in list_params(cls).__annotations__
print(json.dumps(answer))
