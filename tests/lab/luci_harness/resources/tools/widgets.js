'use strict';
'require ui';
'require form';
'require network';

/*
 * LuCI's tools.widgets.NetworkSelect as documented: a ListValue whose choices are the
 * router's networks (network.getNetworks()), rendered as a ui.Dropdown (several with
 * `multiple`, no new names with `nocreate`, 'loopback' only with `loopback`), values
 * checked as UCI names; textvalue() shows the chosen networks as badges.
 */

const CBINetworkSelect = form.ListValue.extend({
	__name__: 'CBI.NetworkSelect',

	load(section_id) {
		return network.getNetworks().then(L.bind(function(networks) {
			this.networks = networks;
			return this.super('load', [ section_id ]);
		}, this));
	},

	filter(section_id, value) {
		return true;
	},

	renderIfaceBadge(net) {
		return E('span', { 'class': 'ifacebadge' }, [ net.getName() ]);
	},

	renderWidget(section_id, option_index, cfgvalue) {
		const values = L.toArray((cfgvalue != null) ? cfgvalue : this.default);
		const choices = {};
		const checked = [];
		if (!this.multiple && (this.rmempty || this.optional))
			choices[''] = E('em', [ _('unspecified') ]);
		this.networks.forEach(function(net) {
			const name = net.getName();
			if (name == this.exclude || !this.filter(section_id, name))
				return;
			if (name == 'loopback' && !this.loopback)
				return;
			if (this.novirtual && net.isVirtual())
				return;
			if (values.indexOf(name) >= 0)
				checked.push(name);
			choices[name] = this.renderIfaceBadge(net);
		}, this);
		const widget = new ui.Dropdown(this.multiple ? checked : checked[0], choices, {
			id: this.cbid(section_id),
			sort: true,
			multiple: this.multiple,
			optional: this.optional || this.rmempty,
			datatype: this.multiple ? 'list(uciname)' : 'uciname',
			validate: L.bind(this.validate, this, section_id),
			create: !this.nocreate
		});
		return widget.render();
	},

	textvalue(section_id) {
		const cfgvalue = this.cfgvalue(section_id);
		const values = L.toArray((cfgvalue != null) ? cfgvalue : this.default);
		const rv = E([]);
		(this.networks || []).forEach(function(net) {
			if (values.indexOf(net.getName()) < 0)
				return;
			if (rv.childNodes.length)
				rv.appendChild(document.createTextNode(' '));
			rv.appendChild(this.renderIfaceBadge(net));
		}, this);
		if (!rv.firstChild)
			rv.appendChild(E('em', [ _('unspecified') ]));
		return rv;
	}
});

return L.Class.extend({
	NetworkSelect: CBINetworkSelect
});
