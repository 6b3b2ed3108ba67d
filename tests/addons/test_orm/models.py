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
