"""A minimal Django project in one module: a view and a static file, served over ASGI."""
import os

import django
from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="powpow-tests-only",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.staticfiles"],
        STATIC_URL="/static/",
        STATICFILES_DIRS=[os.path.join(HERE, "static")],
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def hello(request, name):
    return JsonResponse({"hello": name, "method": request.method, "q": request.GET.get("q", ""),
                         "secure": request.is_secure()})


def upload(request):
    return HttpResponse("got %d bytes" % len(request.body), content_type="text/plain")


urlpatterns = [path("hello/<str:name>", hello), path("upload", upload)]

# ASGIStaticFilesHandler serves STATICFILES_DIRS under STATIC_URL (like runserver), the rest goes to Django
app = ASGIStaticFilesHandler(get_asgi_application())
