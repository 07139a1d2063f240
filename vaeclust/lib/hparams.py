"""One source per hyper-parameter: a method's Config dataclass declares each field's default, help
and check once (`field`), and its flags, their validators and the Config built from parsed flags
all come from that declaration. Flags take the field's name.
"""
import dataclasses
import typing
from typing import Callable, Optional, Sequence

from absl import flags

_HELP = "help"
_CHECK = "check"
_CHOICES = "choices"


def field(default, help: str, check: Optional[Callable] = None, message: str = "",  # pylint: disable=redefined-builtin
          choices: Sequence[str] = ()):
  """A Config field with its flag: `help` (the flag's help), `check(value) → bool` on the
  field's value (a failing command line stops with `message`), `choices` for strings."""
  metadata = {_HELP: help, _CHECK: (check, message), _CHOICES: tuple(choices)}
  return dataclasses.field(default=default, metadata=metadata)


# Checks of Config fields (`field`'s `check`).
def positive(v):
  return v > 0


def non_negative(v):
  return v >= 0


def unit(v):
  return 0 <= v <= 1


def pair_of(check):
  """A check of a pair whose two values each pass `check`."""
  return lambda v: len(v) == 2 and all(check(x) for x in v)


def ordered_pair(low=0.0, high=float("inf"), open_low=False):
  """A check of a (low, high) pair: low <= v[0] <= v[1] <= high (v[0] > low with open_low)."""
  return lambda v: len(v) == 2 and low <= v[0] <= v[1] <= high and (v[0] > low or not open_low)


def flag_fields(config_class):
  """The fields of `config_class` that have a flag (declared with `field`)."""
  return [f for f in dataclasses.fields(config_class) if _HELP in f.metadata]


def _parse(kind, value):
  """A flag's value (lists are strings) as the field of type `kind` holds it."""
  if typing.get_origin(kind) is tuple:
    element = typing.get_args(kind)[0]
    return tuple(element(v) for v in value)
  return kind(value)


def define_flags(config_class, flag_values: flags.FlagValues):
  """Defines a flag and its validator in `flag_values` for every flag field of `config_class`."""
  hints = typing.get_type_hints(config_class)
  for f in flag_fields(config_class):
    kind = hints[f.name]
    _define(f, kind, flag_values)
    check, message = f.metadata[_CHECK]
    if check is not None:
      def valid(value, check=check, kind=kind):
        try:
          return check(_parse(kind, value))
        except (TypeError, ValueError):
          return False
      flags.register_validator(f.name, valid, message=message, flag_values=flag_values)


def _define(f, kind, flag_values):
  common = dict(name=f.name, help=f.metadata[_HELP], flag_values=flag_values)
  if f.metadata[_CHOICES]:
    flags.DEFINE_enum(default=f.default, enum_values=list(f.metadata[_CHOICES]), **common)
  elif kind is bool:
    flags.DEFINE_boolean(default=f.default, **common)
  elif kind is int:
    flags.DEFINE_integer(default=f.default, **common)
  elif kind is float:
    flags.DEFINE_float(default=f.default, **common)
  elif kind is str:
    flags.DEFINE_string(default=f.default, **common)
  elif typing.get_origin(kind) is tuple:
    flags.DEFINE_list(default=[str(v) for v in f.default], **common)
  else:
    raise TypeError(f"No flag type for field {f.name}: {kind}.")


def from_flags(config_class, flag_values: flags.FlagValues, **given):
  """`config_class` from the parsed flags of its flag fields; `given` sets the others (what the
  data and the run decide: image size, channels, ...)."""
  hints = typing.get_type_hints(config_class)
  values = {f.name: _parse(hints[f.name], flag_values[f.name].value)
            for f in flag_fields(config_class) if f.name not in given}
  return config_class(**values, **given)


def from_dict(config_class, values: dict):
  """`config_class` from a dict of its fields as JSON stores them (a run.json's "model": tuples
  as lists)."""
  return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
