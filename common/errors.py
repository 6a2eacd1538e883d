"""The exception hierarchy: one root, narrow subclasses, translated at each boundary."""


class CronbusError(Exception):
    """Root of every error cronbus raises on purpose."""


class ValidationError(CronbusError):
    """Input (a job, a schedule, a setting) is invalid; the message says what is wrong."""


class ScheduleError(ValidationError):
    """A schedule expression cannot be parsed or never fires."""


class NotFoundError(CronbusError):
    """The named thing (job, execution, leader) does not exist."""


class ConflictError(CronbusError):
    """A write lost a check-and-set race or would break an invariant (e.g. a job with dependents)."""


class UnavailableError(CronbusError):
    """A dependency (Consul, the leader, a matching executor) cannot serve the request now."""


class ConsulError(UnavailableError):
    """Consul could not be reached or answered with an error."""


class SettingsError(CronbusError):
    """A configuration value is invalid; raised at start, naming the setting."""
