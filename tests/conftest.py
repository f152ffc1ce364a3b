"Test-session settings that must be in place before torch or matplotlib is imported."
import os
# On 2 busy cores, torch's spinning OpenMP threads cost 3-5x the CPU (measured); let idle threads sleep.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('MPLBACKEND', 'Agg')
