// Package demo implements the handlers of the demo workflow
// (config/templates/order_fulfillment.yaml) for the example worker, the
// end-to-end tests and the benchmarks.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tasker/tasker/worker"
)

// Namespace of the demo workflow.
const Namespace = "ecommerce"

// Order is the demo task context.
type Order struct {
	CustomerID string `json:"customer_id"`
	Items      []struct {
		SKU            string `json:"sku"`
		Quantity       int    `json:"quantity"`
		UnitPriceCents int    `json:"unit_price_cents"`
	} `json:"items"`
	Currency string `json:"currency"`
	// Simulate lets a demo or a test ask for failures: the payment step
	// fails (retryably) on its first PaymentFailures attempts.
	Simulate struct {
		PaymentFailures int `json:"payment_failures"`
	} `json:"simulate"`
}

// Handlers returns the demo handlers; delay simulates work in each.
func Handlers(delay time.Duration) map[string]worker.Handler {
	return map[string]worker.Handler{
		"ecommerce.validate_cart":     withDelay(delay, validateCart),
		"ecommerce.process_payment":   withDelay(delay, processPayment),
		"ecommerce.update_inventory":  withDelay(delay, updateInventory),
		"ecommerce.create_order":      withDelay(delay, createOrder),
		"ecommerce.send_confirmation": withDelay(delay, sendConfirmation),
	}
}

func withDelay(d time.Duration, h worker.Handler) worker.Handler {
	if d <= 0 {
		return h
	}
	return func(ctx context.Context, s *worker.Step) (any, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(d):
		}
		return h(ctx, s)
	}
}

func order(s *worker.Step) (Order, error) {
	var o Order
	if err := s.DecodeContext(&o); err != nil {
		return o, worker.Permanent(err)
	}
	return o, nil
}

func validateCart(_ context.Context, s *worker.Step) (any, error) {
	o, err := order(s)
	if err != nil {
		return nil, err
	}
	total := 0
	count := 0
	for _, it := range o.Items {
		if it.Quantity > 1000 {
			return nil, worker.Permanent(fmt.Errorf("item %s: quantity %d exceeds the per-order limit of 1000", it.SKU, it.Quantity))
		}
		total += it.Quantity * it.UnitPriceCents
		count += it.Quantity
	}
	cur := o.Currency
	if cur == "" {
		cur = "USD"
	}
	return map[string]any{"total_cents": total, "item_count": count, "currency": cur}, nil
}

func processPayment(_ context.Context, s *worker.Step) (any, error) {
	o, err := order(s)
	if err != nil {
		return nil, err
	}
	var cart struct {
		TotalCents int    `json:"total_cents"`
		Currency   string `json:"currency"`
	}
	if err := s.DependencyResult("validate_cart", &cart); err != nil {
		return nil, worker.Permanent(err)
	}
	if strings.HasPrefix(o.CustomerID, "blocked") {
		return nil, worker.Permanent(errors.New("card declined: the payment method is blocked"))
	}
	if s.Attempt <= o.Simulate.PaymentFailures {
		return nil, fmt.Errorf("payment gateway timed out (simulated failure %d of %d)", s.Attempt, o.Simulate.PaymentFailures)
	}
	return map[string]any{"payment_id": "pay_" + shortHash(s.TaskUUID.String()), "amount_cents": cart.TotalCents, "currency": cart.Currency}, nil
}

func updateInventory(_ context.Context, s *worker.Step) (any, error) {
	o, err := order(s)
	if err != nil {
		return nil, err
	}
	reserved := make([]map[string]any, 0, len(o.Items))
	for _, it := range o.Items {
		reserved = append(reserved, map[string]any{"sku": it.SKU, "quantity": it.Quantity})
	}
	return map[string]any{"reservation_id": "res_" + shortHash(s.TaskUUID.String()+"inv"), "reserved": reserved}, nil
}

func createOrder(_ context.Context, s *worker.Step) (any, error) {
	var pay struct {
		PaymentID string `json:"payment_id"`
	}
	var inv struct {
		ReservationID string `json:"reservation_id"`
	}
	if err := s.DependencyResult("process_payment", &pay); err != nil {
		return nil, worker.Permanent(err)
	}
	if err := s.DependencyResult("update_inventory", &inv); err != nil {
		return nil, worker.Permanent(err)
	}
	return map[string]any{"order_id": "ord_" + shortHash(s.TaskUUID.String()+"order"), "payment_id": pay.PaymentID, "reservation_id": inv.ReservationID}, nil
}

func sendConfirmation(_ context.Context, s *worker.Step) (any, error) {
	o, err := order(s)
	if err != nil {
		return nil, err
	}
	var ord struct {
		OrderID string `json:"order_id"`
	}
	if err := s.DependencyResult("create_order", &ord); err != nil {
		return nil, worker.Permanent(err)
	}
	return map[string]any{"sent_to": o.CustomerID, "order_id": ord.OrderID, "channel": "email"}, nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// SampleContext is a valid demo order; i varies the customer.
func SampleContext(i int) string {
	return fmt.Sprintf(`{"customer_id":"cust-%04d","currency":"USD","items":[{"sku":"BOOK-%d","quantity":%d,"unit_price_cents":1299},{"sku":"PEN-1","quantity":2,"unit_price_cents":250}]}`, i, i%7, 1+i%3)
}
