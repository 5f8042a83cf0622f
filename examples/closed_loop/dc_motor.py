"""DcMotor: the plant of the closed-loop demo, a pythonfmu co-simulation FMU.

A DC motor's speed as a first-order lag of its voltage, plus the set-point
profile the controller is asked to follow.  The step is solved exactly for
a voltage held over the step (zero-order hold), so the plant adds no
integration error and no dependence on the master's step size beyond the
hold itself.
"""

import math

from pythonfmu import Fmi2Causality, Fmi2Slave, Fmi2Variability, Real


class DcMotor(Fmi2Slave):
    """First-order DC motor speed model with a set-point step."""

    author = "qemu-fmu"
    description = "DC motor speed (first-order lag) and a set-point step"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gain = 10.0            # rad/s per V at steady state
        self.time_constant = 0.05   # s
        self.step_time = 0.1        # s
        self.step_value = 100.0     # rad/s
        self.voltage = 0.0
        self.speed = 0.0
        self.setpoint = 0.0
        for name in ("gain", "time_constant", "step_time", "step_value"):
            self.register_variable(Real(name, causality=Fmi2Causality.parameter,
                                        variability=Fmi2Variability.fixed))
        self.register_variable(Real("voltage", causality=Fmi2Causality.input,
                                    variability=Fmi2Variability.continuous))
        for name in ("speed", "setpoint"):
            self.register_variable(Real(name, causality=Fmi2Causality.output,
                                        variability=Fmi2Variability.continuous))

    def do_step(self, current_time, step_size):
        if not (math.isfinite(step_size) and step_size > 0):
            return False
        steady = self.gain * self.voltage
        decay = math.exp(-step_size / self.time_constant)
        self.speed = steady + (self.speed - steady) * decay
        end = current_time + step_size
        self.setpoint = self.step_value if end >= self.step_time - 1e-12 else 0.0
        return True
