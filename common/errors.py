"""The exception hierarchy: one root, narrow subclasses, translated at each boundary."""


class CronbusError(Exception):
    """Root of every error cronbus raises on purpose."""


class ValidationError(CronbusError):
    """Input (a job, a schedule, a setting) is invalid; the message says what is wrong."""


class ScheduleError(ValidationError):
    """A schedule expression cannot be parsed or never fires."""


class DurationError(ValidationError):
    """A duration (Go's 1h30m form, or ISO 8601's PT1H30M) cannot be parsed."""


class NotFoundError(CronbusError):
    """The named thing (job, execution, leader) does not exist."""


class CorruptRecordError(CronbusError):
    """A stored value does not decode into what its key holds (edited by hand, a bad restore, half written by an
    older version): it costs only itself, reported with its key and why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"unreadable record {key}: {reason}")
        self.key = key
        self.reason = reason


class ConflictError(CronbusError):
    """A write lost a check-and-set race or would break an invariant (e.g. a job with dependents)."""


class UnavailableError(CronbusError):
    """A dependency (Consul, the leader, a matching executor) cannot serve the request now."""


class ConsulError(UnavailableError):
    """Consul could not be reached or answered with an error: `status` is its HTTP status code, None when there
    was no answer (connection refused, timeout)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SettingsError(CronbusError):
    """A configuration value is invalid; raised at start, naming the setting."""


class UntrustedKeyError(CronbusError):
    """A bus peer presents (or a leader record names) a CURVE key the allow-lists do not give the role it needs:
    it is not talked to."""
