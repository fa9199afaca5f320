"""Where a config came from, and the problems found in it, each named by file:line."""
import dataclasses
import functools
import re

from mtrec.errors import ConfigError

# Errors printed in full; the rest are counted (a wrong input_fields can fail every feature).
MAX_LISTED_PROBLEMS = 50


@dataclasses.dataclass
class Source:
    """Where a config came from, to point errors at a line."""
    path: str
    text: str

    @functools.cached_property
    def _code_lines(self) -> list[str]:
        """The text's lines without their `#` comments, split once for every lookup."""
        return [line.split("#", 1)[0] for line in self.text.splitlines()]

    def where(self, field: str, value: str | None = None, nth: int = 1) -> str:
        """'file:line' of the nth `field` (with `value`, if given) in the text."""
        if value is None:
            pattern = rf"\b{re.escape(field)}\s*(:|\{{)"
        else:
            quoted = rf"['\"]?{re.escape(str(value))}['\"]?"
            # `field: value` or a list `field: [a, value, b]`
            pattern = (rf"\b{re.escape(field)}\s*:\s*({quoted}(\s|$|,|\]|\}})"
                       rf"|\[([^\]]*[,\s])?{quoted}\s*(,|\]))")
        search = re.compile(pattern).search
        seen = 0
        for number, code in enumerate(self._code_lines, start=1):
            if search(code):
                seen += 1
                if seen == nth:
                    return f"{self.path}:{number}"
        return self.path


class Problems:
    """The errors and warnings of one validation, each prefixed with where it is."""

    def __init__(self, source: Source):
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str, field: str | None = None, value=None, nth: int = 1):
        where = self.source.where(field, value, nth) if field else self.source.path
        self.errors.append(f"{where}: {message}")

    def warn(self, message: str, field: str | None = None, value=None):
        where = self.source.where(field, value) if field else self.source.path
        self.warnings.append(f"{where}: {message}")

    def raise_errors(self) -> None:
        """ConfigError listing the errors (the first MAX_LISTED_PROBLEMS), if there are any."""
        if not self.errors:
            return
        count = f"{len(self.errors)} problems" if len(self.errors) > 1 else "1 problem"
        listed = self.errors[:MAX_LISTED_PROBLEMS]
        rest = len(self.errors) - len(listed)
        if rest:
            listed.append(f"... and {rest} more.")
        raise ConfigError(f"{self.source.path}: {count}:\n  " + "\n  ".join(listed))
