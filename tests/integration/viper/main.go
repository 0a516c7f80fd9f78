// A Go program that reads a configd projection through Viper, the way a Go service of the architecture configd
// grew out of does: the raw value of one Consul key (what Viper's remote provider fetches), parsed by Viper.
// Usage: viper-read <consul http addr> <key> <json|yaml>; prints Viper's AllSettings() as JSON.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/viper"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: viper-read ADDR KEY FORMAT")
		os.Exit(2)
	}
	addr, key, format := os.Args[1], os.Args[2], os.Args[3]
	resp, err := http.Get(addr + "/v1/kv/" + key + "?raw")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "GET", key, resp.Status, err)
		os.Exit(1)
	}
	v := viper.New()
	v.SetConfigType(format)
	if err := v.ReadConfig(bytes.NewReader(body)); err != nil {
		fmt.Fprintln(os.Stderr, "viper:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(map[string]interface{}{"settings": v.AllSettings(), "db.host": v.GetString("db.host"), "retries": v.GetInt("retries")})
	fmt.Println(string(out))
}
