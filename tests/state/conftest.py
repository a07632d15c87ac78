from __future__ import annotations

from hypothesis import HealthCheck, settings

# the first st.text() of a fresh checkout builds hypothesis' Unicode tables (~3 s), which
# the too_slow health check would blame on whichever property test happens to run first
settings.register_profile("livepanel-unit", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("livepanel-unit")
