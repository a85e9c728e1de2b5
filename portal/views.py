from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal import health_checks


@never_cache
@require_GET
def healthz(request):
    """JSON for load balancers and monitors: 200 when healthy, 503 otherwise."""
    checks = health_checks.run_all()
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unhealthy", "checks": checks},
        status=200 if healthy else 503,
    )
