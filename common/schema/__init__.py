"""The public schema of a fedsynth job: columns, rules, file IO, validation, encoding, drafts.

The schema is public metadata that all parties agree on and a data steward signs off
BEFORE any data is touched: column kinds, category lists, numeric bounds and bins, code
lists, and structural rules. Everything downstream (the marginal generator's domain, the
codes each client counts, the decoded synthetic values, which synthetic rows are kept) is a
function of the schema alone, never of the data, so it reveals nothing about any person.

File format (YAML, JSON or TOML; see ``fedsynth/data/adult.schema.yaml``)::

    name: adult
    label: Y                 # a column name, or null
    na_values: ["?"]         # tokens that mean "missing" in a data file
    draft: true              # only on drafts read from private data; see draft_warning()
    columns:
      - {name: age, kind: integer, lower: 16, upper: 100, bins: [16, 20, 30, 100]}
      - {name: sex, kind: categorical, categories: [Female, Male]}
      - {name: job, kind: integer, lower: 170, upper: 9920, bins: [170, 1000, 9920],
         codes: [170, 180, 1070, 9920], missing: true}
      - {name: admitted, kind: datetime, lower: 2020-01-01, upper: 2024-12-31, bins: 30D}
    rules:                   # optional; see fedsynth.common.schema.rules
      - {name: no-job-under-16, if: {age: {max: 15}}, then: {job: missing}}

Column keys: ``name``, ``kind`` (categorical, ordinal, boolean, numeric, integer, datetime),
``categories`` (categorical/ordinal; ordinal = ordered), ``lower``/``upper`` (inclusive
bounds), ``bins`` (an int N = N equal-width bins over [lower, upper], or sorted edges from
lower to upper; bins are [e_k, e_k+1) except the last, which is closed), ``codes`` (integer
columns: the public list of valid values; every bin must hold one), ``missing`` (default
false), ``fine`` (numeric, integer and datetime: a public fine grid, a width such as ``1`` or
``1D`` or a list of edges; the generator measures its 1-way marginal and decodes values within
their bins from it), ``out_of_range`` (error | clip, default error) and ``decode`` (uniform | midpoint,
default uniform: how a bin is turned back into a value; among the listed codes when given).
A ``datetime`` column has ISO ``lower``/``upper`` (dates, or datetimes) and ``bins`` as a number
or a public width such as ``30D``; it decodes to a whole day (date bounds) or second in its bin
(see :mod:`.datetimes`).

Value rules, decided here once:

* Categories are text and compared exactly (case and spaces matter). A schema file must
  quote numeric-looking categories (``"1"``), so that ``01`` and ``1`` cannot be confused.
* A boolean cell is ``true``/``false``, ``1``/``0`` or ``yes``/``no`` in any case (or a real bool).
* An integer cell may be written ``5000.0``: integral numbers are integers. ``3.5`` is not.
* Any cell equal to one of ``na_values`` is missing, whether the table was read by
  :meth:`Schema.read_csv` or built by hand. A blank cell (empty or only spaces) is missing
  too, unless ``""`` is one of the column's categories; a column without ``missing: true``
  reports it as a missing value.
* Nothing is coerced silently. The only coercion is ``out_of_range: clip``, which the
  schema declares and every validation report counts.

Structural rules are public too (written from a code book, never from rows). Real data that
breaks one is a validation error; synthetic rows that break one are discarded by
:meth:`Schema.sample_valid`, which is post-processing of the released model and costs no
privacy budget.

Modules: :mod:`.columns` (Column), :mod:`.rules` (rules), :mod:`.model` (Schema,
load_schema), :mod:`.io` (file text), :mod:`.validate` (reports), :mod:`.codec` (codes and
values), :mod:`.sampling` (rule-abiding rows), :mod:`.draft` (drafts from data), :mod:`.cli`.
"""

from .cli import run_draft, run_validate
from .columns import Column, SchemaError
from .draft import draft_schema, draft_warning
from .io import TableFileError
from .model import Schema, load_schema
from .rules import Condition, Hierarchy, Implication, Rule
from .validate import ValidationReport, Violation

__all__ = [
    "Column",
    "Condition",
    "Hierarchy",
    "Implication",
    "Rule",
    "Schema",
    "SchemaError",
    "TableFileError",
    "ValidationReport",
    "Violation",
    "draft_schema",
    "draft_warning",
    "fine_zeros",
    "load_schema",
    "run_draft",
    "run_validate",
    "structural_zeros",
]
from .zeros import fine_zeros, structural_zeros
