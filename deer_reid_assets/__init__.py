"""deer-reid: re-identification of individual white-tailed deer as Dagster assets."""

__version__ = "0.1.0"
