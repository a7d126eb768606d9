"""Persistent classes that the interop scripts store in their databases.

A ZODB record names its class by module and name; keeping the classes in this importable module
(next to the scripts, which Python puts on sys.path) lets any later reader -- a ZEO client, fsrefs,
a person with a Python shell -- load the objects again.
"""

import persistent


class Item(persistent.Persistent):
    """A minimal persistent object in the spirit of ZODB's own tests' MinPO: one name, one value."""

    def __init__(self, name, value=None):
        self.name = name
        self.value = value

    def __repr__(self):
        return f"Item({self.name!r}, {self.value!r})"
