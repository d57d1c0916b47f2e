"""Token usage of one call, normalized so every provider's numbers mean the same thing.

Providers disagree on what "input tokens" means (see protocols.md section 0). Each backend translates its
provider's fields into this one shape; the cost function and the ledger only ever see this shape.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call; ``None`` means the provider did not tell us (unknown, never zero).

    The four prompt components are disjoint and add up to the whole prompt the provider processed:

    - ``input_uncached``: prompt tokens billed at the plain input rate (neither read from nor written to a cache).
    - ``cache_read``: prompt tokens served from the provider's prompt cache (a cache hit).
    - ``cache_write_5m``: prompt tokens written to a short-lived cache: Anthropic's 5-minute cache, or the
      cache writes OpenAI bills on GPT-5.6 and later (30 minutes).
    - ``cache_write_1h``: prompt tokens written to Anthropic's 1-hour cache.

    ``output`` is every generated token billed at the output rate, reasoning/thinking included.
    ``reasoning`` is the part of ``output`` spent on reasoning; it is informational and never billed twice.
    """

    input_uncached: int | None = None
    cache_read: int | None = None
    cache_write_5m: int | None = None
    cache_write_1h: int | None = None
    output: int | None = None
    reasoning: int | None = None

    @property
    def known(self) -> bool:
        """True when the provider reported at least the uncached input and the output."""
        return self.input_uncached is not None and self.output is not None

    @property
    def prompt_tokens(self) -> int | None:
        """All prompt tokens (uncached + cache read + cache writes), or ``None`` if any part is unknown."""
        parts = (self.input_uncached, self.cache_read, self.cache_write_5m, self.cache_write_1h)
        if self.input_uncached is None:
            return None
        return sum(p or 0 for p in parts)

    @property
    def cache_write(self) -> int | None:
        """Both cache-write components together (``None`` when both are unknown)."""
        if self.cache_write_5m is None and self.cache_write_1h is None:
            return None
        return (self.cache_write_5m or 0) + (self.cache_write_1h or 0)

    def as_dict(self) -> dict[str, int | None]:
        """The components by name, for JSON output."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


UNKNOWN_USAGE = Usage()
