"""Every provider kind this package serves, registered on import (the entry point
`resilient.providers`): each adapter module registers its own kind; a kind served only
through its SDK so far is registered without an adapter. The facades register too."""

from __future__ import annotations

import importlib
import pkgutil

from providers import _sdk, email, facades, llm, payments, sms, social
from resilient import registry

for _package in (email, sms, payments, social):
    for _module in pkgutil.iter_modules(_package.__path__):
        importlib.import_module(f"{_package.__name__}.{_module.name}")

for _name in _sdk.KINDS:
    if not registry.is_registered(_name):
        _sdk.register_sdk_kind(_name)

__all__ = ["facades", "llm"]  # imported for what they register: gw.<capability>, llm kinds
