from core import api, fields, models
from core.exceptions import ValidationError


class Partner(models.Model):
    _name = "test.partner"
    _description = "Test partner"
    _order = "name, id"
    _sql_constraints = [("email_unique", "unique(email)", "This email is already used.")]

    name = fields.Char(required=True)
    email = fields.Char()
    age = fields.Integer()
    score = fields.Float()
    active = fields.Boolean(default=True)
    kind = fields.Selection([("person", "Person"), ("company", "Company")], default="person")
    birthday = fields.Date()
    last_seen = fields.Datetime()
    data = fields.Json()
    token = fields.Secret()
    parent_id = fields.Many2one("test.partner", ondelete="set null")
    child_ids = fields.One2many("test.partner", "parent_id")
    tag_ids = fields.Many2many("test.tag")
    child_count = fields.Integer(compute="_compute_child_count", store=True)
    parent_name = fields.Char(related="parent_id.name")
    shout = fields.Char(compute="_compute_shout")

    @api.depends("child_ids")
    def _compute_child_count(self):
        for partner in self:
            partner.child_count = len(partner.child_ids)

    @api.depends("name")
    def _compute_shout(self):
        for partner in self:
            partner.shout = partner.name.upper()

    @api.constrains("age")
    def _check_age(self):
        for partner in self:
            if partner.age < 0:
                raise ValidationError(f"Age cannot be negative ({partner.name}).")


class Tag(models.Model):
    _name = "test.tag"
    _description = "Test tag"

    name = fields.Char(required=True)


class Order(models.Model):
    _name = "test.order"
    _description = "Test order"

    partner_id = fields.Many2one("test.partner", required=True, ondelete="cascade")
    line_ids = fields.One2many("test.order.line", "order_id")
    total = fields.Float(compute="_compute_total", store=True)
    partner_name = fields.Char(compute="_compute_partner_name", store=True)

    @api.depends("line_ids.amount")
    def _compute_total(self):
        for order in self:
            order.total = sum(order.line_ids.mapped("amount"))

    @api.depends("partner_id.name")
    def _compute_partner_name(self):
        for order in self:
            order.partner_name = order.partner_id.name


class OrderLine(models.Model):
    _name = "test.order.line"
    _description = "Test order line"

    order_id = fields.Many2one("test.order", required=True, ondelete="cascade")
    amount = fields.Float()


class Contract(models.Model):
    _name = "test.contract"
    _description = "A record that prevents deleting its partner"

    partner_id = fields.Many2one("test.partner", required=True, ondelete="restrict")


class Task(models.Model):
    _name = "test.task"
    _description = "Test task: fields computed before their record is written"

    name = fields.Char()
    planned = fields.Integer()
    done = fields.Integer()
    remaining = fields.Integer(compute="_compute_remaining", store=True, precompute=True)
    # Follows a precomputed field: computed after it, in a statement of its own.
    remaining_label = fields.Char(compute="_compute_remaining_label", store=True, precompute=True)
    partner_id = fields.Many2one("test.partner", ondelete="set null")
    partner_label = fields.Char(compute="_compute_partner_label", store=True, precompute=True)
    tag_ids = fields.Many2many("test.tag")
    tag_count = fields.Integer(compute="_compute_tag_count", store=True, precompute=True)

    @api.depends("planned", "done")
    def _compute_remaining(self):
        for task in self:
            task.remaining = (task.planned or 0) - (task.done or 0)

    @api.depends("remaining")
    def _compute_remaining_label(self):
        for task in self:
            task.remaining_label = f"{task.remaining} left"

    @api.depends("partner_id.name")
    def _compute_partner_label(self):
        for task in self:
            task.partner_label = f"for {task.partner_id.name}" if task.partner_id else False

    @api.depends("tag_ids")
    def _compute_tag_count(self):
        for task in self:
            task.tag_count = len(task.tag_ids)
