/*
 * pi_law.h - the PI speed law of the example controllers: the Cortex-M
 * firmware (arm/pi.c) and the Linux program (linux/pi_speed.c) run the
 * same law on the same doubles, so their closed loops can be compared.
 */
#ifndef PI_LAW_H
#define PI_LAW_H

/* Gains for a DC motor of ~10 rad/s/V and ~50 ms time constant. */
#define KP    0.5	/* V / (rad/s) */
#define KI    20.0	/* V / (rad/s) / s */
#define V_MAX 12.0	/* V, supply limit */

/*
 * One sample, ts seconds after the last: the command for set-point sp and
 * measurement meas, clamped to +-V_MAX.  Anti-windup: no integrating while
 * saturated in the direction the error pushes, so the output leaves the
 * limit as soon as the error turns.
 */
static inline double pi_law(double *integral, double ts, double sp, double meas)
{
	double e = sp - meas;
	double u = KP * e + *integral + KI * ts * e;

	if (!((u > V_MAX && e > 0) || (u < -V_MAX && e < 0)))
		*integral += KI * ts * e;
	return u > V_MAX ? V_MAX : u < -V_MAX ? -V_MAX : u;
}

#endif
