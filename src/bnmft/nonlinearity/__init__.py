"""The nonlinearity language: every way a user can name phi, resolved to one :class:`Nonlinearity`.

* :mod:`.elementary` - the elementary functions (value and exact derivative), the one table shared by the
  registry, the expressions and the simulator's name table;
* :mod:`.expression` - the safe expression parser (``ast`` against a whitelist, never ``eval``) with exact
  dual-number derivatives and located kinks;
* :mod:`.registry` - the registered names, :class:`Nonlinearity`, :func:`get_nonlinearity` and :func:`resolve`
  (a specification plus its parameters to one Nonlinearity, once per public call).
"""

from .expression import Expression
from .registry import (
    SELU_ALPHA,
    SELU_LAMBDA,
    Nonlinearity,
    PhiSpec,
    available,
    from_callable,
    from_expression,
    get_nonlinearity,
    resolve,
    takes_parameter,
)

__all__ = [
    "SELU_ALPHA",
    "SELU_LAMBDA",
    "Expression",
    "Nonlinearity",
    "PhiSpec",
    "available",
    "from_callable",
    "from_expression",
    "get_nonlinearity",
    "resolve",
    "takes_parameter",
]
