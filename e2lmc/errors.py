"""Errors a user can cause: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """A problem the user can fix (bad submission, bad config, missing file).

    The message must name the file involved and say how to fix it.
    """


class IngestionFailed(UserError):
    """The ingestion output says the prediction step did not finish."""


class Unverified(IngestionFailed):
    """The ingestion output is not (or no longer) what the ingestion program wrote."""
