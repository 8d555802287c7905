"""The one exception type for bad user input: its message is a single line naming the problem and the fix."""


class ConfigError(ValueError):
    """Bad configuration or input, detected before any expensive work starts."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
