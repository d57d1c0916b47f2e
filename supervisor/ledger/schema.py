"""The names of every migration, importable without sqlite-utils, so opening a current ledger stays cheap.

A test checks this list against the migrations registered in ``migrations.py``; add the new name to both.
"""

MIGRATION_NAMES: tuple[str, ...] = (
    "m001_initial",
    "m002_plans",
    "m003_attempts",
    "m004_status_indexes",
    "m005_spend_days",
    "m006_call_price_source",
    "m007_call_turn",
    "m008_gateway",
)
