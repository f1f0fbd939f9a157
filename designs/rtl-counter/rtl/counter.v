// SPDX-License-Identifier: CERN-OHL-P-2.0
//
// Parameterised up-counter.
//
// * WIDTH-bit count, synchronous active-high reset, count enable.
// * `wrap` is a registered one-cycle pulse, high in the cycle after the
//   counter rolled over from all-ones back to zero.
//
// There is deliberately no `timescale directive in this file: the simulation
// flow has to supply a default time unit/precision.

module counter #(
    parameter WIDTH = 8
) (
    input  wire             clk,
    input  wire             rst,   // synchronous, active high
    input  wire             en,    // count enable
    output reg  [WIDTH-1:0] count,
    output reg              wrap   // one-cycle pulse after all-ones -> zero
);

    wire at_max = &count;

    always @(posedge clk) begin
        if (rst) begin
            count <= {WIDTH{1'b0}};
            wrap  <= 1'b0;
        end else begin
            wrap <= en & at_max;
            if (en)
                count <= count + 1'b1;
        end
    end

endmodule
