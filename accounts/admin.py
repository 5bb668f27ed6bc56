from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiKey, Membership, Organization, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined"]
    search_fields = ["email"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "plan", "created_at"]
    list_filter = ["plan"]
    search_fields = ["slug", "name"]
    readonly_fields = ["webhook_secret"]
    inlines = [MembershipInline]
    actions = ["rotate_webhook_secrets"]

    @admin.action(description="Rotate the webhook signing secret")
    def rotate_webhook_secrets(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> None:
        for org in queryset:
            org.rotate_webhook_secret()
        self.message_user(
            request, f"Rotated the webhook secret of {len(queryset)} organization(s)."
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "organization", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "organization__slug"]
    readonly_fields = ["prefix", "digest", "created_at", "last_used_at"]
