"Shared pytest configuration: the Hypothesis profiles of tests/test_fuzz.py."
import os
from hypothesis import HealthCheck, settings

# 'ci' (the default): derandomized, so every run of `make test` tries the same examples and a failure reproduces
# exactly; sized so that the whole fuzz suite stays well under a minute on two cores.
settings.register_profile('ci', derandomize=True, max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# 'explore': random examples, many more of them, for hunting new failures by hand (HYPOTHESIS_PROFILE=explore).
settings.register_profile('explore', max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
