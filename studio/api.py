"""Account endpoints: token sign-in and user management for admins; the OpenAPI schema."""
import threading

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers, status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.api_permissions import IsAdmin
from studio.roles import ROLES, user_role
from studio.services import user_create

User = get_user_model()


class TokenApi(ObtainAuthToken):
    """POST username/password, get {"token": …} for the `Authorization: Token …` header."""


class UserOutputSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ("id", "username", "email", "role", "is_active", "date_joined")

    def get_role(self, obj) -> str | None:
        return user_role(obj)


class UserListCreateApi(ListAPIView):
    permission_classes = [IsAdmin]
    serializer_class = UserOutputSerializer
    queryset = User.objects.prefetch_related("groups").order_by("id")

    class UserInputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(write_only=True)
        role = serializers.ChoiceField(choices=ROLES)
        email = serializers.EmailField(required=False, allow_blank=True, default="")

    @extend_schema(request=UserInputSerializer, responses={201: UserOutputSerializer})
    def post(self, request):
        data = self.UserInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(actor=request.user, **data.validated_data)
        return Response(UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    @extend_schema(responses=UserOutputSerializer)
    def get(self, request):
        return Response(UserOutputSerializer(request.user).data)


class SchemaApi(SpectacularAPIView):
    """The OpenAPI schema. Generated one request at a time: drf-spectacular loads its extension
    classes lazily on the first generation and is not thread-safe while it does (two first
    requests in gunicorn's threads failed with an AttributeError, seen when a slow first request
    was retried by its client)."""

    _lock = threading.Lock()

    def _get_schema_response(self, request):
        with self._lock:
            return super()._get_schema_response(request)
