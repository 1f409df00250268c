package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pptp-alg/pptp-alg/scripts/fw4"
)

// includesDir is the project's fw4 include tree, relative to the module
// root: what the OpenWrt package installs as /usr/share/nftables.d.
const includesDir = "firmware/openwrt/pptp-alg/files/usr/share/nftables.d"

// installFirewall loads the router's ruleset for f.
func (l *Lab) installFirewall(ctx context.Context, opt Options) error {
	f, includes := opt.Firewall, opt.Includes
	c := fw4.Config{LAN: RouterLAN, WAN: RouterWAN, WANInput: opt.WANInput, Redirects: opt.Redirects}
	switch f {
	case FirewallNone:
		if len(opt.WANInput)+len(opt.Redirects) > 0 {
			return errors.New("lab: WAN input rules and port forwards need an fw4 firewall")
		}
		return nil
	case FirewallFW4Helper:
		c.PPTPHelper = true
	case FirewallFW4, FirewallFW4AndHelper:
		c.PPTPHelper = f == FirewallFW4AndHelper
		if includes == "" {
			root, err := ModuleRoot()
			if err != nil {
				return err
			}
			includes = filepath.Join(root, includesDir)
		}
		c.Includes = includes
	default:
		return fmt.Errorf("lab: unknown firewall %v", f)
	}
	ruleset, err := fw4.Render(c)
	if err != nil {
		return err
	}
	path := filepath.Join(l.Dir, "fw4.nft")
	if err := os.WriteFile(path, []byte(ruleset), 0o644); err != nil {
		return err
	}
	if _, err := l.Run(ctx, l.Router, "nft", "-f", path); err != nil {
		return fmt.Errorf("lab: firewall %v: %w", f, err)
	}
	return nil
}
