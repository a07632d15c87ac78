from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from examples.django_asgi import views

urlpatterns = [
    path("login", csrf_exempt(views.login)),
    path("api/sessions/spawn", csrf_exempt(views.spawn_session)),
    path("api/sessions/<str:key>/kill", csrf_exempt(views.kill_session)),
]
