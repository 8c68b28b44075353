"""``slots_init``: a cheaper ``__init__`` for a frozen, slotted dataclass built on the hot path.

The ``__init__`` that ``@dataclass(frozen=True, slots=True)`` writes stores each field with
``object.__setattr__`` (the class refuses plain assignment): about 1,300 instructions a
field under callgrind, so an 11-field ``Usage`` cost about 18,000 before any check of its
own, and a request builds several. Storing each field through its slot's own descriptor
does the same store in about half (the attribute is not looked up again on each call).

The ``__init__`` this writes is the dataclass's own, but for that store: the same
parameters in the same order, the same defaults, the same ``__post_init__`` call after the
last field. The instance is as frozen as before (assignment still raises
``FrozenInstanceError``); equality, hashing, ``repr``, ``dataclasses.replace`` and pickling
are the dataclass's, untouched. Only plain defaults are supported (no ``default_factory``,
no keyword-only or init-less fields): a class that needs more keeps its generated ``__init__``.
"""

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def slots_init(cls: type[C]) -> type[C]:
    """Give ``cls`` (a frozen dataclass with ``slots=True``) the cheaper ``__init__``; apply it
    above ``@dataclass``."""
    declared = getattr(cls, "__dataclass_params__", None)  # what @dataclass was given
    if declared is None or not declared.frozen:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    params = dataclasses.fields(cls)  # type: ignore[arg-type]  # a dataclass: checked just above
    namespace: dict[str, Any] = {}
    signature, body = [], []
    for index, field in enumerate(params):
        if field.default_factory is not dataclasses.MISSING or field.kw_only or not field.init:
            raise TypeError(f"{cls.__name__}.{field.name}: only plain fields with plain defaults are supported")
        slot = cls.__dict__.get(field.name)
        if slot is None or type(slot).__name__ != "member_descriptor":
            raise TypeError(f"{cls.__name__} keeps {field.name} in no slot: declare it with slots=True")
        namespace[f"_set{index}"] = slot.__set__
        if field.default is dataclasses.MISSING:
            signature.append(field.name)
        else:
            namespace[f"_default{index}"] = field.default
            signature.append(f"{field.name}=_default{index}")
        body.append(f"    _set{index}(self, {field.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(signature)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # noqa: S102 - the source is built above from the class's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
