"""Organization names become unique without regard to case: existing names that differ only in case are
renamed first (the oldest keeps its name, the others get their id appended)."""
import django.db.models.functions.text
from django.db import migrations, models

NAME_LENGTH = 100


def rename_case_duplicates(apps, schema_editor):
    Organization = apps.get_model("accounts", "Organization")
    taken, duplicates = set(), []
    for org in Organization.objects.order_by("pk").only("pk", "name"):
        if org.name.lower() in taken:
            duplicates.append(org)
        taken.add(org.name.lower())
    for org in duplicates:  # new names avoid every name kept, whatever its id
        suffix, n = f" ({org.pk})", 1
        while True:
            name = org.name[:NAME_LENGTH - len(suffix)] + suffix
            if name.lower() not in taken:
                break
            n += 1
            suffix = f" ({org.pk}-{n})"
        taken.add(name.lower())
        Organization.objects.filter(pk=org.pk).update(name=name)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0004_invitations'),
    ]

    operations = [
        migrations.RunPython(rename_case_duplicates, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='organization',
            name='name',
            field=models.CharField(max_length=100),
        ),
        migrations.AddConstraint(
            model_name='organization',
            constraint=models.UniqueConstraint(django.db.models.functions.text.Lower('name'),
                                               name='organization_name_unique_ci',
                                               violation_error_message='An organization with this name already exists.'),
        ),
    ]
